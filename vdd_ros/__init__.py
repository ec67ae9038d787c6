"""vdd_ros: data -> teacher -> distillation -> export -> runtime -> nodes.

The core (everything but ``vdd_ros.nodes``) imports without rclpy.
"""

__version__ = "0.1.0"
