"""mysql collectors, one module per concern; importing registers them."""
