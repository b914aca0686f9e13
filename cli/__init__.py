"""The msnas-graph command line (imported as ``msnas_graph.cli``)."""
