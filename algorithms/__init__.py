"""Thin QgsProcessingAlgorithm adapters over the engine, which runs in a worker process."""
