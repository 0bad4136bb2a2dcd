"""ONNX Runtime engine: providers, the U-Net session, the text encoder, bundle loading, the pipeline.

Import the modules directly (`inference.bundle_loader.load_bundle`, `inference.pipeline.Pipeline`);
this package imports nothing itself so `import diffusion_studio.inference` stays cheap.
"""
