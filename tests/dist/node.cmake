# node tests (tests/dist/CMakeLists.txt): nodes joining through a
# redis-server the tests start, remote send, link, monitor and calls, node
# down. node_peer is a node in an OS process of its own, for the test that
# kills a node with SIGKILL.
add_executable(ember_dist_node_peer node/node_peer.cpp)
target_link_libraries(ember_dist_node_peer PRIVATE ember::dist)
target_compile_options(ember_dist_node_peer PRIVATE -Wall -Wextra)
ember_capnp_generate(ember_dist_node_peer IMPORT_DIRS node FILES node/node_messages.capnp)

add_executable(ember_dist_node_test node/node_test.cpp)
target_link_libraries(ember_dist_node_test PRIVATE ember::dist ember_test_support)
target_compile_options(ember_dist_node_test PRIVATE -Wall -Wextra)
target_compile_definitions(ember_dist_node_test PRIVATE EMBER_NODE_PEER="$<TARGET_FILE:ember_dist_node_peer>")
add_dependencies(ember_dist_node_test ember_dist_node_peer)
ember_capnp_generate(ember_dist_node_test IMPORT_DIRS node FILES node/node_messages.capnp)
gtest_discover_tests(ember_dist_node_test
  DISCOVERY_MODE PRE_TEST
  PROPERTIES LABELS "dist/node_test" TIMEOUT 120)

# Durable mailboxes; durable_consumer is a consumer's node in an OS process
# of its own, for the test that kills it.
add_executable(ember_dist_durable_consumer node/durable_consumer.cpp)
target_link_libraries(ember_dist_durable_consumer PRIVATE ember::dist)
target_compile_options(ember_dist_durable_consumer PRIVATE -Wall -Wextra)
ember_capnp_generate(ember_dist_durable_consumer IMPORT_DIRS node FILES node/node_messages.capnp)

add_executable(ember_dist_durable_test node/durable_test.cpp)
target_link_libraries(ember_dist_durable_test PRIVATE ember::dist ember_test_support)
target_compile_options(ember_dist_durable_test PRIVATE -Wall -Wextra)
target_compile_definitions(ember_dist_durable_test PRIVATE EMBER_DURABLE_CONSUMER="$<TARGET_FILE:ember_dist_durable_consumer>")
add_dependencies(ember_dist_durable_test ember_dist_durable_consumer)
ember_capnp_generate(ember_dist_durable_test IMPORT_DIRS node FILES node/node_messages.capnp)
gtest_discover_tests(ember_dist_durable_test
  DISCOVERY_MODE PRE_TEST
  PROPERTIES LABELS "dist/durable_test" TIMEOUT 600)

# Nodes against a Redis that restarts, and against a 3-master Redis Cluster.
add_executable(ember_dist_resilience_test node/resilience_test.cpp)
target_link_libraries(ember_dist_resilience_test PRIVATE ember::dist ember_test_support)
target_compile_options(ember_dist_resilience_test PRIVATE -Wall -Wextra)
ember_capnp_generate(ember_dist_resilience_test IMPORT_DIRS node FILES node/node_messages.capnp)
gtest_discover_tests(ember_dist_resilience_test
  DISCOVERY_MODE PRE_TEST
  PROPERTIES LABELS "dist/resilience_test" TIMEOUT 300)
