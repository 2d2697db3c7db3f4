"""Vision at the AI server: YOLO on the hub's motion-gated frames, tracking, zones, alerts, visual questions.

Modules, in the order a frame meets them:

* ``pipeline``   VisionPipeline: frames in (batched across cameras), results out; implements ``view.Views``
* ``detector``   the Detector protocol and YoloDetector (ultralytics; the only place torch is touched)
* ``tracking``   ByteTrack ids and the new/update/end lifecycle per camera
* ``zones``      polygons, bottom-centre position, inertia
* ``alerting``   when an entry is an alert (once per track, de-dup, overlapping cameras), publishing, history
* ``config``     VISION_* as one value; ``metrics``: counters for GetStatus and Prometheus
* ``view``       what the rest of the server may ask (cameras, latest views); ``ask``: visual questions
"""
