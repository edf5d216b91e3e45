"""One module per DVC stage: params in, one library call, artifacts and metrics out."""
