"""Engine: the pipeline graph, its stream policies, statistics and the scored-window events."""
