"""The house every section builds in: configuration, cached artifacts, the model-family registry, hook names."""
