// placeholder: replaced by the dist layer's node implementation.
namespace ember::dist {}
