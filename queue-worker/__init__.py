"""The OpenFaaS queue-worker handler; built into the python3-jetstream template's ``function/``."""
