# Building interfaces against the ROS 2 Jazzy PyPI wheels (ros-*), installed in a Python
# environment: include this right after project(), before find_package(ament_cmake).
#
# 1. Ament prefix. The wheels install an ament prefix into the environment (sys.prefix of the
#    interpreter, e.g. the project's .venv), and rosidl finds its type support packages through
#    AMENT_PREFIX_PATH. When that prefix holds an ament index but is not on AMENT_PREFIX_PATH
#    (a venv activated without a ROS setup script), it is prepended for this configure.
#
# 2. Include directories. Repoint the include directories that the wheels export from their
#    build container to this interpreter's Python and NumPy headers.
#
# The wheels' exported CMake targets (e.g. <pkg>::<pkg>__rosidl_generator_py) list
# INTERFACE_INCLUDE_DIRECTORIES such as /opt/python/cp311-cp311/include/python3.11 and
# .../site-packages/numpy/core/include, which do not exist on this machine, and CMake refuses
# to generate a target that links an imported target with a missing include directory. This
# script rewrites, on the imported targets of the including directory only (nothing is written
# outside the build), every missing entry that names Python or NumPy headers to the headers of
# the interpreter that builds (Python3_EXECUTABLE, the venv's python), and drops any other
# missing entry. Entries that exist are left alone, so on a full ROS 2 install it changes
# nothing. It runs again at the end of the directory (cmake_language DEFER) to catch targets
# imported after the include.

if(NOT Python3_EXECUTABLE)
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
endif()
execute_process(
  COMMAND "${Python3_EXECUTABLE}" -c
    "import sysconfig, numpy; print(sysconfig.get_paths()['include']); print(numpy.get_include()); import sys; print(sys.prefix)"
  OUTPUT_VARIABLE _occ_py_out
  OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _occ_py_rc)
if(NOT _occ_py_rc EQUAL 0)
  message(FATAL_ERROR "ros_wheels: ${Python3_EXECUTABLE} cannot report its Python/NumPy include dirs")
endif()
string(REPLACE "\n" ";" _occ_py_out "${_occ_py_out}")
list(GET _occ_py_out 0 OCC_PYTHON_INCLUDE_DIR)
list(GET _occ_py_out 1 OCC_NUMPY_INCLUDE_DIR)
list(GET _occ_py_out 2 OCC_PYTHON_PREFIX)

if(EXISTS "${OCC_PYTHON_PREFIX}/share/ament_index/resource_index/packages")
  set(_occ_ament "$ENV{AMENT_PREFIX_PATH}")
  string(REPLACE ":" ";" _occ_ament "${_occ_ament}")
  if(NOT "${OCC_PYTHON_PREFIX}" IN_LIST _occ_ament)
    message(STATUS "ros_wheels: adding ${OCC_PYTHON_PREFIX} to AMENT_PREFIX_PATH")
    if("$ENV{AMENT_PREFIX_PATH}" STREQUAL "")
      set(ENV{AMENT_PREFIX_PATH} "${OCC_PYTHON_PREFIX}")
    else()
      set(ENV{AMENT_PREFIX_PATH} "${OCC_PYTHON_PREFIX}:$ENV{AMENT_PREFIX_PATH}")
    endif()
    list(PREPEND CMAKE_PREFIX_PATH "${OCC_PYTHON_PREFIX}")
  endif()
endif()

function(occ_fix_wheel_include_dirs)
  get_property(_targets DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_t IN LISTS _targets)
    get_target_property(_dirs ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_new "")
    set(_changed FALSE)
    foreach(_d IN LISTS _dirs)
      if(_d MATCHES "^\\$<" OR EXISTS "${_d}")
        list(APPEND _new "${_d}")
      elseif(_d MATCHES "numpy")
        list(APPEND _new "${OCC_NUMPY_INCLUDE_DIR}")
        set(_changed TRUE)
      elseif(_d MATCHES "include/python3")
        list(APPEND _new "${OCC_PYTHON_INCLUDE_DIR}")
        set(_changed TRUE)
      else()
        set(_changed TRUE)
      endif()
    endforeach()
    if(_changed)
      list(REMOVE_DUPLICATES _new)
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_new}")
      message(STATUS "ros_wheels: ${_t}: ${_dirs} -> ${_new}")
    endif()
  endforeach()
endfunction()

occ_fix_wheel_include_dirs()
cmake_language(DEFER CALL occ_fix_wheel_include_dirs)
