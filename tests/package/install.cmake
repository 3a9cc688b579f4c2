# cmake -DBUILD_DIR=<ember build> -DPREFIX=<dir> -P install.cmake
# Installs ember from BUILD_DIR into an emptied PREFIX, so that nothing from
# an earlier install can hide a file the install no longer provides.
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND ${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${PREFIX}"
                COMMAND_ERROR_IS_FATAL ANY)
