"""Bad-input catalogue (index filled in below)."""
