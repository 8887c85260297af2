"""`bridge web`: watch and steer a room from a browser (the ops layer)."""
