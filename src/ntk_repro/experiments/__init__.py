"""One module per reproduced result; each defines the stage functions its rules call."""
