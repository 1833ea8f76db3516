"""Call control: placing and answering calls, and (later) the bridge that runs them."""
