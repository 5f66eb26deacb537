"""The paper's studies as reusable analyses: gradient variance, random rule assignments, alignment."""
