"""Wire formats: decoding client requests and rendering responses and errors."""
