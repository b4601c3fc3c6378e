"""The annotator dock's sections, one small widget per file, each driven by the shared AnnotatorState."""
