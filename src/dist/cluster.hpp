// What the distribution layer's other parts (durable mailboxes) need to
// know of the node they run on (src/dist/node.cpp).
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace ember::dist::detail {

struct cluster_settings {
  std::vector<std::string> redis;  // the node's Redis addresses
  std::string cluster;             // its cluster's name (the key space)
  std::string node_name;
  std::chrono::milliseconds timeout;  // the node's down_after: how long a Redis command may take
};

// The settings of the calling process's node. Throws error(not_in_process)
// outside processes and error(unavailable) on a runtime that is no node.
cluster_settings current_cluster(const char* call);

}  // namespace ember::dist::detail
