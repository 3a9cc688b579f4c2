# wire tests (tests/dist/CMakeLists.txt): ember::wire<S>, its validation and
# the codec registry, on the schemas of schemas/test_messages.capnp.
add_executable(ember_dist_wire_test wire_test.cpp)
target_link_libraries(ember_dist_wire_test PRIVATE ember_dist_wire ember_test_support)
target_compile_options(ember_dist_wire_test PRIVATE -Wall -Wextra)
ember_capnp_generate(ember_dist_wire_test FILES schemas/test_messages.capnp)
gtest_discover_tests(ember_dist_wire_test
  DISCOVERY_MODE PRE_TEST
  PROPERTIES LABELS "dist/wire_test")
