"""Second process for the two-process message test: publishes a fully populated PolicyAction."""

import sys

import rclpy
from builtin_interfaces.msg import Time
from vdd_ros_msgs.msg import PolicyAction


def main() -> None:
    rclpy.init(args=sys.argv)
    node = rclpy.create_node("policy_action_peer")
    pub = node.create_publisher(PolicyAction, "peer_actions", 10)
    seq = [0]

    def tick() -> None:
        msg = PolicyAction()
        msg.header.stamp = Time(sec=12, nanosec=345)
        msg.header.frame_id = "world"
        msg.observation_stamp = Time(sec=11, nanosec=999)
        msg.action = [0.25, -0.5]
        msg.action_names = ["delta_x", "delta_y"]
        msg.expert_index = 3
        msg.expert_probability = 0.125
        msg.policy_id = "peer-policy"
        msg.policy_sha256_short = "0123456789ab"
        msg.sequence = seq[0]
        msg.source = PolicyAction.SOURCE_HOLD
        pub.publish(msg)
        seq[0] += 1

    node.create_timer(0.05, tick)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
