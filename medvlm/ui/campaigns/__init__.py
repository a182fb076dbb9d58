"""The Campaigns tab: shared review campaigns of stored outputs or of pairs of them (:mod:`.layout`)."""
