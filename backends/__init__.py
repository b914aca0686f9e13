"""Backends that compile msnas-graph objects (imported as ``msnas_graph.backends``)."""
