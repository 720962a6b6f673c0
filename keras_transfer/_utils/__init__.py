"""The ground floor, private to the package: durable files, the Keras internals it touches,
the names the command line offers, the supervisor of multi-worker commands. Imports nothing of
the package."""
