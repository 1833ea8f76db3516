"""The HTTP API: thin routes that validate a request, then hand it to the store or call
control."""
