"""Feature networks and their preprocessing: what turns images into features and logits (Inception,
classifier, DINOv2, CLIP), reading images and image folders, loading network files; never imports scores/."""
