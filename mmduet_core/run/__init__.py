"""Running the model over data: benchmark inference over a test file (`benchmark`), the prediction file and its
sidecars (`outputs`), and scoring a model on the toy world (`toyeval`)."""
