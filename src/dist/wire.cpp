// placeholder: replaced by the dist layer's wire implementation.
namespace ember::dist {}
