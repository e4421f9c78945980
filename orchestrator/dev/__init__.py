"""Developer tools: the failure harness, the benchmark, the dev runner and the embedded
store. Production services never import this package."""
