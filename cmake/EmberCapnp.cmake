# ember_capnp_generate: compiles Cap'n Proto schemas (.capnp) into C++ for a
# target, so that their structs can travel between nodes as ember::wire<S>.
#
#   find_package(ember REQUIRED)         # brings this file and CapnProto
#   add_executable(app main.cpp)
#   ember_capnp_generate(app
#     [IMPORT_DIRS dir...]               # roots for `import "/x/y.capnp"`
#     FILES schemas/chat.capnp other.capnp)
#   target_link_libraries(app PRIVATE ember::dist)
#
# and in C++:  #include "schemas/chat.capnp.h"
#
# What it does, for each file:
#   - runs `capnp compile` with the C++ plugin into
#     ${CMAKE_CURRENT_BINARY_DIR}/<target>_capnp, at build time, again
#     whenever any of the target's FILES changes (a file's generated code
#     depends on the files it imports) or the capnp tools do;
#   - adds the generated <file>.capnp.c++ to the target's sources;
#   - adds the output directory to the target's include directories (PUBLIC,
#     so a library's consumers see the headers too) and links CapnProto::capnp
#     (PUBLIC).
# Where a file's header lands, which is how it is #included: relative to
# the IMPORT_DIRS entry that contains it if there is one (the longest), so
# that `import "/x/y.capnp"` in another schema finds <x/y.capnp.h>;
# otherwise relative to the calling CMakeLists.txt's directory. A file in
# neither is an error. Relative paths (FILES and IMPORT_DIRS) are relative to
# the calling CMakeLists.txt's directory. capnp's own schemas
# (/capnp/c++.capnp...) are always importable.
#
# The generated code is the Cap'n Proto compiler's, not the target's: it is
# compiled with warnings off (-w), and its include directory is a SYSTEM one,
# so that -Wall -Wextra -Werror on the target applies to its own code only.
#
# Needs find_package(CapnProto) first (ember's package config does it). The
# tools are CAPNP_EXECUTABLE / CAPNPC_CXX_EXECUTABLE when set (CapnProto's
# config sets them), else the CapnProto::capnp_tool / CapnProto::capnpc_cpp
# targets (or capnp_tool / capnpc_cpp of a capnp built in the same tree),
# else `capnp` and `capnpc-c++` on the PATH. Needs CMake 3.20.

function(ember_capnp_generate target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "IMPORT_DIRS;FILES")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "ember_capnp_generate(${target}): unexpected arguments '${arg_UNPARSED_ARGUMENTS}' "
                        "(usage: ember_capnp_generate(<target> [IMPORT_DIRS dir...] FILES file.capnp...))")
  endif()
  if(NOT arg_FILES)
    message(FATAL_ERROR "ember_capnp_generate(${target}): no FILES given")
  endif()
  if(NOT TARGET ${target})
    message(FATAL_ERROR "ember_capnp_generate(${target}): no such target; call it after add_executable/add_library")
  endif()
  if(NOT TARGET CapnProto::capnp)
    message(FATAL_ERROR "ember_capnp_generate(${target}): CapnProto::capnp is not defined; call find_package(CapnProto) first")
  endif()

  # The tools, as CapnProtoMacros.cmake (capnp_generate_cpp) finds them.
  set(tool_depends "")
  set(capnp "${CAPNP_EXECUTABLE}")
  set(capnpc_cxx "${CAPNPC_CXX_EXECUTABLE}")
  set(capnp_include "${CAPNP_INCLUDE_DIRECTORY}")
  foreach(candidate CapnProto::capnp_tool capnp_tool)
    if(NOT capnp AND TARGET ${candidate})
      set(capnp "$<TARGET_FILE:${candidate}>")
      list(APPEND tool_depends ${candidate})
      if(NOT capnp_include)
        get_target_property(capnp_include ${candidate} CAPNP_INCLUDE_DIRECTORY)
      endif()
    endif()
  endforeach()
  foreach(candidate CapnProto::capnpc_cpp capnpc_cpp)
    if(NOT capnpc_cxx AND TARGET ${candidate})
      get_target_property(capnpc_cxx ${candidate} CAPNPC_CXX_EXECUTABLE)
      if(NOT capnpc_cxx)
        set(capnpc_cxx "$<TARGET_FILE:${candidate}>")
      endif()
      list(APPEND tool_depends ${candidate})
    endif()
  endforeach()
  if(NOT capnp)
    find_program(EMBER_CAPNP_EXECUTABLE capnp)
    set(capnp "${EMBER_CAPNP_EXECUTABLE}")
  endif()
  if(NOT capnpc_cxx)
    find_program(EMBER_CAPNPC_CXX_EXECUTABLE capnpc-c++)
    set(capnpc_cxx "${EMBER_CAPNPC_CXX_EXECUTABLE}")
  endif()
  if(NOT capnp OR NOT capnpc_cxx)
    message(FATAL_ERROR "ember_capnp_generate(${target}): the Cap'n Proto compiler was not found "
                        "(capnp: '${capnp}', capnpc-c++: '${capnpc_cxx}'); install capnproto "
                        "or set CAPNP_EXECUTABLE and CAPNPC_CXX_EXECUTABLE")
  endif()
  # A tool given as a file (not a generator expression) is a dependency too:
  # a new compiler regenerates.
  foreach(tool "${capnp}" "${capnpc_cxx}")
    if(IS_ABSOLUTE "${tool}" AND NOT tool MATCHES "^\\$<")
      list(APPEND tool_depends "${tool}")
    endif()
  endforeach()

  set(out "${CMAKE_CURRENT_BINARY_DIR}/${target}_capnp")

  # Absolute, normalized, without a trailing slash.
  set(import_dirs "")
  set(include_flags "")
  foreach(dir IN LISTS arg_IMPORT_DIRS)
    cmake_path(ABSOLUTE_PATH dir BASE_DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}" NORMALIZE)
    string(REGEX REPLACE "(.)/$" "\\1" dir "${dir}")
    list(APPEND import_dirs "${dir}")
    list(APPEND include_flags "-I${dir}")
  endforeach()
  if(capnp_include)
    list(APPEND include_flags "-I${capnp_include}")
  endif()

  set(schemas "")
  foreach(file IN LISTS arg_FILES)
    cmake_path(ABSOLUTE_PATH file BASE_DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}" NORMALIZE)
    if(NOT EXISTS "${file}")
      message(FATAL_ERROR "ember_capnp_generate(${target}): schema '${file}' does not exist")
    endif()
    list(APPEND schemas "${file}")
  endforeach()

  set(sources "")
  set(headers "")
  foreach(file IN LISTS schemas)
    # The root the file's output path is relative to.
    set(root "")
    foreach(dir IN LISTS import_dirs)
      cmake_path(IS_PREFIX dir "${file}" NORMALIZE inside)
      string(LENGTH "${dir}" dir_length)
      string(LENGTH "${root}" root_length)
      if(inside AND dir_length GREATER root_length)
        set(root "${dir}")
      endif()
    endforeach()
    if(NOT root)
      cmake_path(IS_PREFIX CMAKE_CURRENT_SOURCE_DIR "${file}" NORMALIZE inside)
      if(NOT inside)
        message(FATAL_ERROR "ember_capnp_generate(${target}): schema '${file}' is neither under "
                            "${CMAKE_CURRENT_SOURCE_DIR} nor under one of the IMPORT_DIRS; "
                            "list its root directory in IMPORT_DIRS")
      endif()
      set(root "${CMAKE_CURRENT_SOURCE_DIR}")
    endif()
    cmake_path(RELATIVE_PATH file BASE_DIRECTORY "${root}" OUTPUT_VARIABLE relative)
    set(generated_source "${out}/${relative}.c++")
    set(generated_header "${out}/${relative}.h")
    if(generated_header IN_LIST headers)
      message(FATAL_ERROR "ember_capnp_generate(${target}): two schemas would generate ${generated_header}")
    endif()
    add_custom_command(
      OUTPUT "${generated_source}" "${generated_header}"
      COMMAND "${CMAKE_COMMAND}" -E make_directory "${out}"
      COMMAND "${capnp}" compile "-o${capnpc_cxx}:${out}" "--src-prefix=${root}" ${include_flags} "${file}"
      DEPENDS ${schemas} ${tool_depends}
      COMMENT "Compiling Cap'n Proto schema ${relative} for ${target}"
      VERBATIM)
    list(APPEND sources "${generated_source}")
    list(APPEND headers "${generated_header}")
  endforeach()

  target_sources(${target} PRIVATE ${sources} ${headers})
  set_source_files_properties(${sources} ${headers} TARGET_DIRECTORY ${target}
    PROPERTIES GENERATED TRUE)
  set_source_files_properties(${sources} TARGET_DIRECTORY ${target}
    PROPERTIES COMPILE_OPTIONS "$<IF:$<CXX_COMPILER_ID:MSVC>,/w,-w>")
  target_include_directories(${target} SYSTEM PUBLIC "$<BUILD_INTERFACE:${out}>")
  target_link_libraries(${target} PUBLIC CapnProto::capnp)
endfunction()
