"""One reader per checkpoint format; each turns a ByteSource into a Checkpoint."""
