"""Corpora: layouts, the demo corpus (eSpeak NG), noise, sharding and the `Shards` reader."""
