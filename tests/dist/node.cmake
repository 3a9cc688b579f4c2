# node tests (tests/dist/CMakeLists.txt): nodes joining through a
# redis-server the tests start, remote send, link, monitor and calls, node
# down, durable mailboxes, Redis restarts and a 3-master cluster.
# ember_dist_node_program(<target> <source>): a program of these tests,
# linked with ember::dist and the tests' message schema.
function(ember_dist_node_program target source)
  add_executable(${target} ${source})
  target_link_libraries(${target} PRIVATE ember::dist)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  ember_capnp_generate(${target} IMPORT_DIRS node FILES node/node_messages.capnp)
endfunction()
# ember_dist_node_test(<name> <timeout> [helper program]): a test file.
function(ember_dist_node_test name timeout)
  ember_dist_node_program(ember_dist_${name} node/${name}.cpp)
  target_link_libraries(ember_dist_${name} PRIVATE ember_test_support)
  gtest_discover_tests(ember_dist_${name}
    DISCOVERY_MODE PRE_TEST
    PROPERTIES LABELS "dist/${name}" TIMEOUT ${timeout})
endfunction()

# Nodes in OS processes of their own, for the tests that kill a node.
ember_dist_node_program(ember_dist_node_peer node/node_peer.cpp)
ember_dist_node_program(ember_dist_durable_consumer node/durable_consumer.cpp)

ember_dist_node_test(node_test 120)
target_compile_definitions(ember_dist_node_test PRIVATE EMBER_NODE_PEER="$<TARGET_FILE:ember_dist_node_peer>")
add_dependencies(ember_dist_node_test ember_dist_node_peer)

ember_dist_node_test(durable_test 600)
target_compile_definitions(ember_dist_durable_test PRIVATE EMBER_DURABLE_CONSUMER="$<TARGET_FILE:ember_dist_durable_consumer>")
add_dependencies(ember_dist_durable_test ember_dist_durable_consumer)

ember_dist_node_test(resilience_test 300)
