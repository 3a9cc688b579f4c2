// The whole public API of ember.
#pragma once

#include "ember/core/error.hpp"
#include "ember/core/exit_reason.hpp"
#include "ember/core/heap.hpp"
#include "ember/core/message.hpp"
#include "ember/core/pid.hpp"
#include "ember/core/preempt.hpp"
#include "ember/core/process.hpp"
#include "ember/core/receive.hpp"
#include "ember/core/request.hpp"
#include "ember/core/shared.hpp"
#include "ember/core/spawn.hpp"
#include "ember/sched/runtime.hpp"
#include "ember/sched/timer.hpp"
#include "ember/otp/gen_server.hpp"
#include "ember/otp/registry.hpp"
#include "ember/otp/supervisor.hpp"
