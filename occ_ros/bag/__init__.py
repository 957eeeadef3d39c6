"""rosbag2 tools: nuScenes -> bag converter (:mod:`.nusc2bag`), player (:mod:`.play`) and
playback evaluation (:mod:`.evaluate`). Bags are written and read with ``rosbags`` (no rosbag2_py)."""
