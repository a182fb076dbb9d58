"""The Ask tab: put a case on screen, ask the model, watch it reason, review the answer (:mod:`.layout`)."""
