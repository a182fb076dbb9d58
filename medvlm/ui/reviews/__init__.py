"""The Reviews tab: every stored review, filtered, summarised and exported (:mod:`.layout`)."""
