// placeholder: replaced by the dist layer's redis implementation.
namespace ember::dist {}
