export function Overview() {
  return <p>Overview: to be built.</p>;
}
