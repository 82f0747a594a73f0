"""Sample retl-dagster destination plugin (type `echo`)."""
