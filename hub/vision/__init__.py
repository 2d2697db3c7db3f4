"""The hub's side of the vision pipeline (spec §7): motion-gate each camera, send the AI server what moved.

- motion.py: the per-camera motion gate (background subtraction on 160x120 grey, every-Nth forwarding)
- frames.py: decoded frame -> small grey image for the gate, -> scaled JPEG for the AI server
- camera.py: one camera's state: gate, refresh timing, frame ids, counters
- uplink.py: the one AnalyzeFrames stream to the AI server, with its bounded drop-oldest queue
- service.py: wires a device's video track through all of the above
"""

from hub.vision.service import VisionService

__all__ = ["VisionService"]
