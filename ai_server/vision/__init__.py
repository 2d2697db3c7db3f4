"""Vision at the AI server: YOLO on the hub's motion-gated frames, tracking, zones, alerts, visual questions."""
