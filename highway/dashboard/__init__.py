"""The live dashboard's side of Highway: the event hub (the page itself comes later)."""
