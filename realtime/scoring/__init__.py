"""Scoring: the Scorer (checkpoint + featurizer contract) and the backends that run the model."""
