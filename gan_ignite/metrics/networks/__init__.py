"""Feature networks (Inception, classifier, DINOv2, CLIP), their preprocessing, image reading; never imports scores/."""
