# redis tests (tests/dist/CMakeLists.txt): ember::redis's connection and
# client against real redis-server processes that the tests start on free
# loopback ports (support/redis_server.hpp), a three-master cluster, and
# fake servers written as ember processes.
add_executable(ember_dist_redis_test redis_test.cpp)
target_link_libraries(ember_dist_redis_test PRIVATE ember_dist_redis ember_test_support)
target_compile_options(ember_dist_redis_test PRIVATE -Wall -Wextra)
gtest_discover_tests(ember_dist_redis_test
  DISCOVERY_MODE PRE_TEST
  PROPERTIES LABELS "dist/redis_test" TIMEOUT 120)
