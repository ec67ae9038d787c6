"""rosbag2 recordings (MCAP, sqlite3) -> the demonstration dataset; see docs/dataset_format.md."""
