%% What the BEAM peers of the ember workload programs share: arguments,
%% the 60 s watchdog, RSS, the clock. Run a workload as
%%   erl +P 4000000 -noshell -pa <dir> -s wN main [Size ...]
-module(bench_util).
-export([arg/3, watchdog/1, rss_bytes/0, now_ns/0, wait_process_count/1, fail/2, finish/0]).

%% The I-th argument (atoms, as -s passes them) as an integer, or Default.
arg(Args, I, _Default) when length(Args) >= I ->
    list_to_integer(atom_to_list(lists:nth(I, Args)));
arg(_Args, _I, Default) ->
    Default.

%% Prints "RESULT <Tag> timeout=1 runtime=beam" and halts if the program is
%% still running after 60 s.
watchdog(Tag) ->
    spawn(fun() ->
                  receive after 60000 ->
                          io:format("RESULT ~s timeout=1 runtime=beam~n", [Tag]),
                          io:format(standard_error, "~s: did not finish within 60 s~n", [Tag]),
                          erlang:halt(2)
                  end
          end).

%% VmRSS of the emulator, in bytes.
rss_bytes() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [_, Rest] = binary:split(Status, <<"VmRSS:">>),
    [Kb | _] = string:lexemes(binary_to_list(Rest), " \t\n"),
    list_to_integer(Kb) * 1024.

now_ns() ->
    erlang:monotonic_time(nanosecond).

%% Waits until no more than Count processes exist.
wait_process_count(Count) ->
    case erlang:system_info(process_count) =< Count of
        true -> ok;
        false -> receive after 1 -> wait_process_count(Count) end
    end.

fail(Format, Args) ->
    io:format(standard_error, "error: " ++ Format ++ "~n", Args),
    erlang:halt(1).

finish() ->
    erlang:halt(0).
