# ember_capnp_generate(<target> <file.capnp>...): placeholder, written by the wire-messages work.
function(ember_capnp_generate target)
endfunction()
