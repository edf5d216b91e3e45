"""progre: pretrain ProgRE and HuBERT speech models end to end (the library and the `progre` CLI)."""
