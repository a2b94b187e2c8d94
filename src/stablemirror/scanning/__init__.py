"""Model-file and image scanning: pure analyzers (pickle, zip/tar containers, safetensors,
GGUF, Keras, ONNX) that read a stream and never execute it, the scan jobs that run them
after a push or a mirror ingest, and the policy wrapper that blocks pulls (docs/scanning.md).
"""
