"""Call status: what a call's state is after each outcome (:mod:`.state`, pure) and where it
is kept (:mod:`.store`, a JetStream key-value bucket)."""
