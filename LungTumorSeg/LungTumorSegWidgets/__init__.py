"""Qt parts of the LungTumorSeg panel (sections with their own .ui); the module file holds the main widget."""
