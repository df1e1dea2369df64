"""The features stage's pieces: reading work units, decoding, encoding, writing Parquet."""
