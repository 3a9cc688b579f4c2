%% What the BEAM peers of the ember workload programs share: arguments,
%% the 60 s watchdog, RSS, the clock. Run a workload as
%%   erl +P 4000000 -noshell -pa <dir> -s wN main [Size ...]
-module(bench_util).
-export([arg/3, watchdog/1, rss_bytes/0, now_ns/0, wait_process_count/1, fail/2, finish/0,
         hist_bucket/1, hist_quantile_ns/3, ponger/1]).

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

%% --- the latency histogram of bench/latency_hist.hpp ---------------------------
%% Exact below 256 ns, then 128 buckets per doubling. The peers keep the
%% counts in a `counters` array (index hist_bucket(Ns) + 1).

hist_bucket(V) when V < 256 -> V;
hist_bucket(V) ->
    Msb = msb(V bsr 8, 8),
    256 + (Msb - 8) * 128 + ((V bsr (Msb - 7)) band 127).

msb(0, B) -> B - 1;
msb(V, B) -> msb(V bsr 1, B + 1).

midpoint(I) when I < 256 -> I;
midpoint(I) ->
    Msb = (I - 256) div 128 + 8,
    Sub = (I - 256) rem 128,
    W = 1 bsl (Msb - 7),
    (128 + Sub) * W + (W - 1) / 2.

%% The Q-quantile (0..1) of N samples whose bucket counts are Counts, in ns.
hist_quantile_ns(Counts, N, Q) ->
    Rank = max(1, ceil(Q * N)),
    walk(Counts, 0, 0, Rank).

walk([C | Rest], I, Seen, Rank) ->
    case Seen + C >= Rank of
        true -> midpoint(I);
        false -> walk(Rest, I + 1, Seen + C, Rank)
    end.

%% The ponger of W6 and W7: answers {ping, From} with pong until stop, then
%% sends Driver {ponger_done, Answered}.
ponger(Driver) -> ponger(Driver, 0).

ponger(Driver, Answered) ->
    receive
        {ping, From} ->
            From ! pong,
            ponger(Driver, Answered + 1);
        stop ->
            Driver ! {ponger_done, Answered}
    end.
